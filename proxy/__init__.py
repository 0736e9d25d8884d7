"""speclearn's data plane: the OpenAI-compatible proxy and the storage both processes share."""
