"""Client messages: their shapes on the wire (wire.py), the state machine that applies them
(machine.py), and the rest of a run's life: registration, reuse, Stale, cancel (runs.py)."""

from .machine import Store, apply_message
from .runs import cancel_workflow, register_workflow, sweep_stale
from .wire import MAX_NAME_CHARS, Message, Registration, clean, parse_message

__all__ = [
    "MAX_NAME_CHARS",
    "Message",
    "Registration",
    "Store",
    "apply_message",
    "cancel_workflow",
    "clean",
    "parse_message",
    "register_workflow",
    "sweep_stale",
]
