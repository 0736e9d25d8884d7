"""speclearn's learning side: compile feedback into new spec versions."""
