"""The model endpoint's client: OpenAI-compatible chat completions over aiohttp (default) or httpx,
bounded body reads, one ``classify()`` from failures to error kinds, and the scrub that makes a
server's error text safe for an event.

Entry point: :class:`~ddscope.engine.client.model_client.ModelClient`; what its answers mean
(a :class:`~ddscope.engine.client.answers.ChatResult` or one error): ``answers``.
"""
