"""What input the server accepts: the checks live in hello_protocol, shared with clients."""

from hello_protocol.validation import InputLimits, InvalidInput, check_id, check_name, check_text

__all__ = ["InputLimits", "InvalidInput", "check_id", "check_name", "check_text"]
