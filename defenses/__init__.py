"""Training-time and inference-time defenses; importing this package registers the built-ins."""
