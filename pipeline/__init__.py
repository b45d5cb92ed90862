"""aiimg: a studio for AI artists who publish their work (drafts -> seeds -> variations -> gallery)."""

__version__ = "0.1.0"
