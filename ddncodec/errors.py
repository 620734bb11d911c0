"""Every error a user can cause. The CLI turns them into exit codes by one rule
(``cli.exit_code``): usage, option and I/O errors exit 1, bad or corrupt input exits 2."""


class DDNError(Exception):
    """Bad or corrupt input: the base of every error ddncodec raises on purpose."""


class FormatError(DDNError):
    """A .ddn stream that is truncated, corrupt, of another version or another model."""


class InputError(DDNError):
    """An input image (or option value) ddncodec cannot encode."""


class OptionError(InputError):
    """An option value out of range for this model, file or command (a usage error: exit 1)."""


class ModelError(DDNError):
    """A model file that is missing, unreadable or inconsistent with its config."""
