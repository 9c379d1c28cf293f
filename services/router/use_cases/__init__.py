"""What the router does, one use case a module, each in a unit of work (``unit_of_work.py``).

Consumed events: ``inbound_events`` (the event-type table) runs ``contact_requested``,
``contact_abandoned``, ``callbacks`` and ``dialing_outcomes``. Time: ``tick`` (expiries via
``offer_timeout``, presence via ``agent_presence``, new offers via ``offers``). Agents: ``agent_status``.
"""
