"""Layer 2, the Arkor wire: configuration, ``ArkorClient`` (routes, auth, errors), the models and
the one converter, the job event stream (a channel of :mod:`arkor_trio.stream` plus job decoding
and ``end`` handling) and the WebSocket job feed.

The public names are re-exported from :mod:`arkor_trio`; the modules here are private.
"""
