/// Token buckets and the bandwidth hierarchy arrive with the limits issue.
public enum Throttle {}
