"""What the callback service does, one use case a module, each in a unit of work (``unit_of_work.py``).

Commands (the API): ``request_callback``, ``record_attempt``. Consumed events: ``inbound_events`` (the
event-type table) runs ``request_callback``, ``record_attempt``, ``agent_presence``, ``agent_tokens``,
``offer_accepted``, ``offer_refused`` and ``assignment_completed``. Time: ``tick`` (one scheduler pass:
``watch_deadlines``, then ``release_due``). Shared steps: ``breach`` (a promise broke) and ``due`` (the
router is handed a callback). Which agents count as free is decided in ``agent_presence`` alone.
"""
