"""The sans-IO core of utcp.

Nothing in this package imports trio, reads a clock, or touches a socket.
Every input takes ``now`` (seconds, a float from whatever clock the driver
uses); timers are absolute deadlines read with ``get_timer()`` and fired with
``handle_timer(now)``; randomness and secrets are injected by the caller.
"""
