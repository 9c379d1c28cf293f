"""What the router does, one use case a module, each in a unit of work (``unit_of_work.py``).

Time: ``tick`` (expiries via ``offer_timeout``, presence via ``agent_presence``, new offers via
``offers``). Agents: ``agent_status``.
"""
