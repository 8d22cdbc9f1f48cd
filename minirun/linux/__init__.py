"""Linux kernel features used to build a container, one module per concern."""
