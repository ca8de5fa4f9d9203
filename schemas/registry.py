"""A minimal Confluent Schema Registry client: the two calls the codec needs, over urllib.

Registering gives the id a producer writes in front of every message; looking an id up gives a
consumer the writer's schema, so it can read messages written with an older (or newer) version.
Both answers never change for a given input, so they are cached for the life of the process.

Only the Confluent REST API is spoken (``POST /subjects/{subject}/versions``,
``GET /schemas/ids/{id}``), which Confluent's registry, Karapace, Redpanda and Apicurio's
``/apis/ccompat/v7`` endpoint all serve. No extra dependency: urllib is enough for two JSON calls.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    """The registry is unreachable or refused a call: an infrastructure problem, not bad data.

    Consumers must not dead-letter a message because of it; they should stop and retry.
    """


class SchemaNotFound(RegistryError):
    """The registry has no schema with this id: the message's header is wrong, not the registry."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"unknown schema id {schema_id}")
        self.schema_id = schema_id


class SchemaRegistry:
    """Registers and fetches schemas, caching both directions."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registered if new (idempotent on the server)."""
        cached = self._ids.get((subject, schema))
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        answer = self._call("POST", path, {"schema": schema})
        schema_id = int(answer["id"])
        with self._lock:
            self._ids[(subject, schema)] = schema_id
            self._schemas[schema_id] = schema
        return schema_id

    def schema(self, schema_id: int) -> str:
        """The schema text registered under ``schema_id``; :class:`SchemaNotFound` if none."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise SchemaNotFound(schema_id) from None
            raise RegistryError(f"schema registry {self.url}: HTTP {error.code} for id "
                                f"{schema_id}") from error
        with self._lock:
            self._schemas[schema_id] = answer["schema"]
        return answer["schema"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            if method == "GET":
                raise  # the caller tells a missing id from a failure
            detail = error.read().decode(errors="replace")[:300]
            raise RegistryError(f"schema registry {self.url} refused {method} {path}: "
                                f"HTTP {error.code} {detail}") from error
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise RegistryError(f"schema registry {self.url} unreachable for {method} {path}: "
                                f"{error}") from error
