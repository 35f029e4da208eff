"""The one Lua loader: a store's scripts read from ``lua/`` once, loaded with SCRIPT LOAD, run by EVALSHA.

Every Redis store declares its scripts as one :class:`Scripts` at import time::

    SCRIPTS = Scripts("ratelimit", "ratelimit_hold")             # lua/ratelimit.lua, lua/ratelimit_hold.lua
    SCRIPTS = Scripts("admit", "record", prelude="breaker")       # each one preceded by lua/breaker.lua

then calls :meth:`Scripts.load` when it (re)connects and :meth:`Scripts.call` (one script) or
:meth:`Scripts.call_many` (several in one pipeline) on the way. A Redis restart or ``SCRIPT FLUSH``
forgets the scripts: the EVALSHA that meets NOSCRIPT loads them again and runs once more, so callers
never see it. In a Redis Cluster each master keeps its own scripts (a promoted replica may lack
them): :meth:`Scripts.load` loads them on every master, and after NOSCRIPT on the masters of the
keys that met it. Every other error is raised as redis-py raised it; the store translates it
(:func:`proxy.state.redis.client.translated`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from proxy.state.redis import cluster

LUA = Path(__file__).parent / "lua"

Execute = Callable[..., Awaitable[Any]]
"""Runs one command and returns its reply: ``client.execute_command``, or a :class:`Lane`'s ``execute``."""

ScriptCall = tuple[str, Sequence[str], Sequence[Any]]
"""One script to run: its name, KEYS, ARGV."""


class Scripts:
    """The Lua scripts of one store, by name (the file name in ``lua/`` without ``.lua``)."""

    def __init__(self, *names: str, prelude: str | None = None) -> None:
        """``prelude``: a file of shared rules put before each script (Redis runs one text per script)."""
        shared = (LUA / f"{prelude}.lua").read_text() + "\n" if prelude else ""
        self.texts: dict[str, str] = {name: shared + (LUA / f"{name}.lua").read_text() for name in names}
        self.shas: dict[str, str] = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in self.texts.items()}

    async def load(self, client: aioredis.Redis, near: Sequence[str] = ()) -> None:
        """SCRIPT LOAD every script, in one round trip. In a cluster: on every master, or on the masters
        of ``near``'s keys only (where NOSCRIPT came from)."""
        if isinstance(client, RedisCluster):
            await cluster.load_scripts(client, list(self.texts.values()), near)
            return
        async with client.pipeline(transaction=False) as pipe:
            for text in self.texts.values():
                pipe.script_load(text)
            await pipe.execute()

    async def call(self, client: aioredis.Redis, name: str, keys: Sequence[str], args: Sequence[Any],
                   execute: Execute | None = None) -> Any:
        """EVALSHA ``name`` through ``execute`` (default: ``client``'s); on NOSCRIPT load the scripts, run it again."""
        execute = execute or client.execute_command
        try:
            return await execute("EVALSHA", self.shas[name], len(keys), *keys, *args)
        except NoScriptError:  # a restart, SCRIPT FLUSH, a promoted replica
            await self.load(client, keys[:1])
            return await execute("EVALSHA", self.shas[name], len(keys), *keys, *args)

    async def call_many(self, client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run ``calls`` in one pipeline, in order; the calls that met NOSCRIPT run again after a load.
        Raises the first error a call's reply holds."""
        replies = await self._pipeline(client, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # those calls did not run
            await self.load(client, [calls[i][1][0] for i in missing if calls[i][1]])
            again = await self._pipeline(client, [calls[i] for i in missing])
            for i, reply in zip(missing, again):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipeline(self, client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for name, keys, args in calls:
                pipe.evalsha(self.shas[name], len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
