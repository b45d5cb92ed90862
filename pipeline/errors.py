"""The one exception type library code raises; only the CLI turns it into an exit code."""


class AiimgError(Exception):
    """A problem the user can fix. The message names the file, key or value and what to do."""


class ConfigError(AiimgError):
    """aiimg.toml (or a CLI override) is unreadable or holds a bad key or value."""


class MarkerError(AiimgError):
    """A seed.txt that cannot be honoured; the loop writes the message to seed.error.txt."""


class ModelError(AiimgError):
    """A model that cannot be loaded here (not cached, missing config, unknown format)."""
