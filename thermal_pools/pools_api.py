"""Client for the pools endpoints of Airflow's REST API v2.

Pools are only ever changed through the public API, as the service user of an Airflow
Connection (default id ``thermal_pools_api``, role ``op``), because task code may not touch the
metadata database. One :meth:`PoolsApiClient.apply` call makes one read (``GET /api/v2/pools``)
and at most one write (bulk ``PATCH /api/v2/pools`` with ``action_on_existence: overwrite``),
whatever the number of tier pools. It writes nothing when every pool already has its target size
and description. The read takes more than one request only when more pools than fit on one page
share the tier pools' name prefix (see :meth:`PoolsApiClient.list_pools`).

The overwrite sends only ``name``, ``slots`` and ``description``. Airflow 3.3 applies just the
fields a bulk request sets, so ``include_deferred``, ``team_name`` and anything else a person set
on a pool stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from os.path import commonprefix
from typing import Any
from urllib.parse import urlsplit

import httpx

from thermal_pools.tiers import PoolTarget

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0

# Airflow's default [api] maximum_page_limit. A larger read is paged (see list_pools).
PAGE_SIZE = 100


class PoolsApiError(RuntimeError):
    """A pools request failed; the message names the pools, the cause and what to do."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class PoolState:
    """A pool as the API reports it."""

    name: str
    slots: int
    description: str | None
    running_slots: int = 0
    queued_slots: int = 0
    deferred_slots: int = 0
    include_deferred: bool = False


@dataclass
class ApplyResult:
    """Outcome of one apply: pools created, updated and unchanged, their previous sizes and the requests made."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    previous: dict[str, int] = field(default_factory=dict)
    read_requests: int = 0
    write_requests: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def summary(self) -> str:
        if not self.changed:
            return f"unchanged ({len(self.unchanged)} pools)"
        parts = []
        if self.created:
            parts.append("created " + ", ".join(self.created))
        if self.updated:
            parts.append("updated " + ", ".join(self.updated))
        return "; ".join(parts)


class PoolsApiClient:
    """Read and write Airflow pools through REST API v2 as one user.

    ``base_url`` is the api-server's root, for example ``http://127.0.0.1:8080``. A JWT is
    fetched from ``/auth/token`` on first use and fetched again once if a request gets 401.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        conn_id: str = "",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PoolsApiError(
                f"invalid Airflow API address {base_url!r}"
                + (f" in connection {conn_id!r}" if conn_id else "")
                + ": expected http://HOST:PORT of the api-server"
            )
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.conn_id = conn_id
        self._token: str | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"PoolsApiClient({self.base_url!r}, user={self.username!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PoolsApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------

    def _where(self) -> str:
        source = f" (connection {self.conn_id!r})" if self.conn_id else ""
        return f"Airflow API at {self.base_url}{source}"

    def _fetch_token(self) -> str:
        try:
            response = self._http.post("/auth/token", json={"username": self.username, "password": self._password})
        except httpx.HTTPError as error:
            raise self._unreachable(error, "log in") from None
        if response.status_code in (400, 401, 403):
            raise PoolsApiError(
                f"{self._where()} rejected the credentials of user {self.username!r} "
                f"(HTTP {response.status_code}): fix the connection's login and password",
                status_code=response.status_code,
            )
        if response.status_code in (404, 405):
            # Airflow's UI serves unknown paths itself and returns 404, or 405 for a POST.
            raise PoolsApiError(
                f"{self._where()} has no /auth/token endpoint (HTTP {response.status_code}): point the connection at an "
                "Airflow 3 api-server that uses the simple auth manager, or at one whose auth manager issues tokens there",
                status_code=response.status_code,
            )
        if response.status_code >= 300:
            raise self._http_error(response, "log in", [])
        token = self._json(response, "log in").get("access_token")
        if not token:
            raise PoolsApiError(f"{self._where()} returned no access_token for user {self.username!r}")
        return token

    def _json(self, response: httpx.Response, action: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PoolsApiError(
                f"could not {action}: {self._where()} returned {response.headers.get('content-type', 'no content type')} "
                "instead of a JSON object; point the connection at the root address of an Airflow 3 api-server"
            )
        return body

    def _unreachable(self, error: httpx.HTTPError, action: str) -> PoolsApiError:
        return PoolsApiError(
            f"could not {action}: {self._where()} is unreachable ({type(error).__name__}: {error}); "
            "start the api-server or fix the connection's host and port"
        )

    def _request(self, method: str, path: str, *, pools: Iterable[str], **kwargs: Any) -> httpx.Response:
        names = sorted(pools)
        for attempt in (1, 2):
            if self._token is None:
                self._token = self._fetch_token()
            try:
                response = self._http.request(
                    method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
                )
            except httpx.HTTPError as error:
                raise self._unreachable(error, f"{method} {path} for pools {', '.join(names)}") from None
            if response.status_code == 401 and attempt == 1:
                # The token expired or the server's secret changed: log in again once.
                self._token = None
                continue
            if response.status_code >= 300:
                raise self._http_error(response, f"{method} {path}", names)
            return response
        raise AssertionError("unreachable")

    def _http_error(self, response: httpx.Response, action: str, pools: list[str]) -> PoolsApiError:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        detail = str(detail)[:500]
        which = f" for pools {', '.join(pools)}" if pools else ""
        advice = {
            401: f"the credentials of user {self.username!r} were rejected: fix the connection's login and password",
            403: f"user {self.username!r} may not change pools: give it the 'op' role",
            404: "the endpoint was not found: point the connection at an Airflow 3 api-server",
            409: "a pool changed at the same time: the next maintenance step retries",
            422: "Airflow rejected the request body: check the pool names and slot numbers",
        }.get(response.status_code, "retry later; the previous pool sizes stay in force")
        return PoolsApiError(
            f"{action}{which} failed at {self._where()} with HTTP {response.status_code} ({detail}): {advice}",
            status_code=response.status_code,
        )

    # -- pools --------------------------------------------------------------------------

    def list_pools(self, names: Iterable[str]) -> dict[str, PoolState]:
        """Return the named pools that exist, in one request when they fit one page.

        The request filters on the names' common prefix. Airflow caps a page at its
        ``[api] maximum_page_limit`` (100 by default), so a fleet with more pools than that
        under one prefix is read in several pages.
        """
        wanted = set(names)
        prefix = commonprefix(sorted(wanted))
        found: dict[str, PoolState] = {}
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": max(PAGE_SIZE, len(wanted)), "offset": offset, "order_by": "name"}
            if prefix:
                params["pool_name_prefix_pattern"] = prefix
            response = self._request("GET", "/api/v2/pools", pools=wanted, params=params)
            body = self._json(response, "list pools")
            page = body.get("pools", [])
            for item in page:
                if item["name"] in wanted:
                    found[item["name"]] = PoolState(
                        name=item["name"],
                        slots=int(item["slots"]),
                        description=item.get("description"),
                        running_slots=int(item.get("running_slots", 0)),
                        queued_slots=int(item.get("queued_slots", 0)),
                        deferred_slots=int(item.get("deferred_slots", 0)),
                        include_deferred=bool(item.get("include_deferred", False)),
                    )
            offset += len(page)
            if not page or offset >= int(body.get("total_entries", 0)) or len(found) == len(wanted):
                return found

    def apply(self, targets: Iterable[PoolTarget]) -> ApplyResult:
        """Create missing pools and update changed ones so that each matches its target."""
        targets = list(targets)
        result = ApplyResult()
        current = self.list_pools(target.name for target in targets)
        # NOTE: counts one read even when list_pools needed several pages.
        result.read_requests = 1

        entities = []
        for target in targets:
            existing = current.get(target.name)
            if existing is None:
                result.created.append(target.name)
            elif existing.slots != target.slots or (existing.description or "") != target.description:
                result.updated.append(target.name)
                result.previous[target.name] = existing.slots
            else:
                result.unchanged.append(target.name)
                continue
            entities.append({"name": target.name, "slots": target.slots, "description": target.description})

        if not entities:
            return result

        body = {"actions": [{"action": "create", "action_on_existence": "overwrite", "entities": entities}]}
        names = [entity["name"] for entity in entities]
        response = self._request("PATCH", "/api/v2/pools", pools=names, json=body)
        result.write_requests = 1
        errors = (self._json(response, "update pools").get("create") or {}).get("errors", [])
        if errors:
            first = errors[0]
            raise PoolsApiError(
                f"bulk update of pools {', '.join(names)} failed at {self._where()}: "
                f"{first.get('error')} (HTTP {first.get('status_code')}); the next maintenance step retries",
                status_code=first.get("status_code"),
            )
        return result


def client_from_connection(conn_id: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> PoolsApiClient:
    """Build a client from an Airflow Connection (type ``http``: host, port, login, password).

    The connection may come from the metadata database, an ``AIRFLOW_CONN_*`` variable or a
    secrets backend, so credentials need not appear in code or DAG files.
    """
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as error:
        # The Task SDK raises its own AirflowNotFoundException, and the class differs by context.
        raise PoolsApiError(
            f"Airflow connection {conn_id!r} for the pools API was not found ({type(error).__name__}): "
            f"create it, e.g. AIRFLOW_CONN_{conn_id.upper()}='http://USER:PASSWORD@127.0.0.1:8080', "
            "for a user with the 'op' role"
        ) from None
    if not connection.host:
        raise PoolsApiError(f"Airflow connection {conn_id!r} has no host: set host and port of the api-server")
    if not connection.login or not connection.password:
        raise PoolsApiError(
            f"Airflow connection {conn_id!r} has no login or password: set them to a user with the 'op' role"
        )
    scheme = connection.schema or "http"
    if scheme not in ("http", "https"):
        # The "schema" field of an HTTP connection carries the URL scheme.
        scheme = "http"
    host = connection.host
    if "://" in host:
        base_url = host
    else:
        base_url = f"{scheme}://{host}" + (f":{connection.port}" if connection.port else "")
    return PoolsApiClient(base_url, connection.login, connection.password, conn_id=conn_id, timeout=timeout)
