"""What the router does, one use case a module, each in a unit of work (``unit_of_work.py``).

Commands: ``agent_admin``, ``agent_status``, ``accept_offer``, ``decline_offer``, ``complete_contact``,
``strategy_reload``. Consumed events: ``inbound_events`` (the event-type table) runs
``contact_requested``, ``contact_abandoned``, ``callbacks`` and ``dialing_outcomes``. Time: ``tick``
(expiries via ``offer_timeout``, presence via ``agent_presence``, new offers via ``offers``).
"""
