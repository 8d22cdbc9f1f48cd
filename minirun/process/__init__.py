"""Process model: parent side (create.py), child side (init.py), the channel between them (sync.py)."""
