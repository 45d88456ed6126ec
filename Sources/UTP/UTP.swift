/// BEP 29 uTP: the packet codec and connection state machine arrive with the uTP issue.
public enum UTP {}
