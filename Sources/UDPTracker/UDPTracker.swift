/// BEP 15 UDP tracker client arrives with the UDP tracker issue.
public enum UDPTracker {}
