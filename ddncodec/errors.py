"""Every error a user can cause. The CLI maps DDNError to exit code 2, OSError to 1."""


class DDNError(Exception):
    """Bad or corrupt input: the base of every error ddncodec raises on purpose."""


class FormatError(DDNError):
    """A .ddn stream that is truncated, corrupt, of another version or another model."""


class InputError(DDNError):
    """An input image (or option value) ddncodec cannot encode."""


class ModelError(DDNError):
    """A model file that is missing, unreadable or inconsistent with its config."""
