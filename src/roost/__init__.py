"""roost: a Phoenix-Channels-compatible real-time server, scaled out through Redis Pub/Sub."""

__version__ = "0.1.0"
