"""Request admission shared by several worker processes through Redis (``--admission``).

``url`` parses and redacts the ``redis://`` URL; ``scripts`` holds the Lua that changes a
domain's shared state atomically; ``store`` is a worker's connection (batched calls, pub/sub,
lease renewal, loss); ``gate`` is the shared :class:`RequestGate`; ``local_redis`` starts a
throwaway ``redis-server`` for tests, benchmarks and a one-machine ``--workers`` job.
"""
