"""minirun: an OCI container runtime that speaks runc's command line."""

__version__ = "0.1.0"
OCI_VERSION = "1.2.0"
