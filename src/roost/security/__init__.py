"""Security pieces: signed tokens, Origin checks, rate limits."""
