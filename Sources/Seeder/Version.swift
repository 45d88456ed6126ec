public enum SeederVersion { public static let string = "0.1.0" }
