"""Triggers: derived signals (``signals``) and the trigger library, events and clip windows (``library``)."""
