"""A Zotero 7 library as input, read through Zotero's local API (httpx).

Zotero 7 serves its own database at ``http://localhost:23119/api/`` (the Web API v3, read
only, user id ``0``) once "Allow other applications on this computer to communicate with
Zotero" is on (Settings → Advanced). A collection's top-level items are the papers; each
item's child attachments are its files. An imported file's JSON links to it as a
``file://`` URL (``links.enclosure``); for other attachments ``/items/{key}/file`` answers
with a redirect to that URL. The item's citation key (Zotero 7's ``citationKey`` field, or
Better BibTeX's ``Citation Key:`` line in Extra) becomes the paper's name.

>>> papers = load_papers(zotero(collection="Review 2026"))
>>> papers = load_papers("zotero:Review 2026")          # the same, as a string
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .._errors import ZoteroUnavailable
from .metadata import Reference, format_name, normalize_doi, year_in
from .references import LibraryEntry, local_path

__all__ = ["URL_VARIABLE", "ZOTERO_URL", "Zotero", "parse_zotero", "zotero"]

ZOTERO_URL = "http://localhost:23119"
URL_VARIABLE = "DLLM_ZOTERO_URL"
"""Where ``zotero:NAME`` and ``zotero()`` look when no ``url`` is given (Zotero's
``httpServer.port`` can move it)."""
ENABLE_HINT = (
    "start Zotero 7 and turn on Settings → Advanced → 'Allow other applications on this "
    "computer to communicate with Zotero'"
)
_VENUE_FIELDS = (
    "publicationTitle",
    "proceedingsTitle",
    "bookTitle",
    "conferenceName",
    "websiteTitle",
    "university",
    "institution",
    "publisher",
)
_READABLE_TYPES = ("application/pdf", "text/plain", "text/markdown")
_CITATION_KEY_RE = re.compile(r"^\s*Citation Key:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
_EXTRA_DOI_RE = re.compile(r"^\s*DOI:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Zotero:
    """Papers from a Zotero library: one collection (by name or key), or every top-level
    item when ``collection`` is None. Pass it wherever a folder of papers goes.

    >>> cluster.analyze(zotero(collection="Review 2026"), preset="research")
    """

    collection: str | None = None
    url: str = field(default_factory=lambda: os.environ.get(URL_VARIABLE) or ZOTERO_URL)
    timeout: float = 10.0

    def __str__(self) -> str:
        return f"zotero:{self.collection}" if self.collection else "zotero:"

    @property
    def where(self) -> str:
        what = f"collection {self.collection!r}" if self.collection else "library"
        return f"Zotero {what} at {self.url}"

    def entries(self) -> list[LibraryEntry]:
        """The collection's items with their attachments' local paths."""
        with httpx.Client(
            base_url=f"{self.url.rstrip('/')}/api/users/0", timeout=self.timeout
        ) as client:
            if self.collection is None:
                items = self._get(client, "/items/top")
            else:
                key = self._collection_key(client)
                items = self._get(client, f"/collections/{key}/items/top")
            entries = []
            for item in items:
                data = item.get("data", {})
                if data.get("itemType") in ("note", "annotation"):
                    continue
                if data.get("itemType") == "attachment":  # a file with no parent item
                    files = self._files(client, [item])
                else:
                    files = self._files(client, self._get(client, f"/items/{item['key']}/children"))
                entries.append(LibraryEntry(_reference(data), files, self.where, item["key"]))
            return entries

    def _collection_key(self, client: httpx.Client) -> str:
        collections = self._get(client, "/collections")
        wanted = self.collection or ""
        names_of = {c["key"]: str(c.get("data", {}).get("name", "")) for c in collections}
        matches = (
            [c for c in collections if names_of[c["key"]] == wanted]
            or [c for c in collections if c["key"] == wanted]
            or [c for c in collections if names_of[c["key"]].lower() == wanted.lower()]
        )
        if len(matches) == 1:
            return str(matches[0]["key"])
        names = sorted(f"{name!r} ({key})" for key, name in names_of.items())
        if matches:
            first = matches[0]["key"]
            raise ZoteroUnavailable(
                f"{len(matches)} Zotero collections are named {wanted!r}: {', '.join(names)}; "
                f"name one by its key, e.g. zotero(collection={first!r})",
                source=str(self),
            )
        raise ZoteroUnavailable(
            f"no Zotero collection named {wanted!r} at {self.url}; its collections are: "
            f"{', '.join(names) or 'none'}",
            source=str(self),
        )

    def _files(self, client: httpx.Client, children: list[dict[str, Any]]) -> tuple[Path, ...]:
        files = []
        for child in children:
            data = child.get("data", {})
            if data.get("itemType") != "attachment" or data.get("linkMode") == "linked_url":
                continue
            if data.get("contentType") not in _READABLE_TYPES and not str(
                data.get("filename") or data.get("path") or ""
            ).lower().endswith((".pdf", ".txt", ".md")):
                continue
            href = child.get("links", {}).get("enclosure", {}).get("href")
            if not href:  # linked files: ask where the file is
                response = self._request(client, f"/items/{child['key']}/file")
                href = response.headers.get("location") if response.status_code == 302 else None
            if href and href.startswith("file:"):
                files.append(local_path(href, Path.cwd()))
        return tuple(files)

    def _get(self, client: httpx.Client, path: str) -> list[dict[str, Any]]:
        response = self._request(client, path)
        if response.status_code != 200:
            raise ZoteroUnavailable(
                f"{self.where} answered {response.status_code} to {path} "
                f"({response.text.strip()[:200]}); check that Zotero 7 is running and up to date",
                source=str(self),
            )
        body = response.json()
        return body if isinstance(body, list) else [body]

    def _request(self, client: httpx.Client, path: str) -> httpx.Response:
        try:
            response = client.get(path, headers={"Zotero-API-Version": "3"})
        except httpx.TransportError as exc:
            raise ZoteroUnavailable(
                f"Zotero is not answering at {self.url} ({exc.__class__.__name__}); {ENABLE_HINT}",
                source=str(self),
            ) from exc
        if response.status_code == 403:
            raise ZoteroUnavailable(
                f"Zotero's local API is not enabled ({response.text.strip()}); {ENABLE_HINT}",
                source=str(self),
            )
        return response


def zotero(
    collection: str | None = None, *, url: str | None = None, timeout: float = 10.0
) -> Zotero:
    """Papers from Zotero 7 on this computer: a collection by name or key, or the whole
    library. Needs Zotero running with its local API on (Settings → Advanced). ``url``
    defaults to ``$DLLM_ZOTERO_URL``, else ``http://localhost:23119``.

    >>> df = cluster.analyze(zotero(collection="Review 2026"))
    """
    if url is None:
        return Zotero(collection, timeout=timeout)
    return Zotero(collection, url=url, timeout=timeout)


def parse_zotero(text: str) -> Zotero | None:
    """``zotero:Review 2026`` (or ``zotero://Review 2026``, or Zotero's own
    ``zotero://select/library/collections/KEY`` link) as a :class:`Zotero` source."""
    if not text.lower().startswith("zotero:"):
        return None
    rest = text[len("zotero:") :].removeprefix("//").strip().strip("'\"")
    selected = re.fullmatch(r"select/library/collections/(\w+)", rest)
    return Zotero(selected.group(1) if selected else rest or None)


def _reference(data: dict[str, Any]) -> Reference:
    extra = str(data.get("extra") or "")
    key = data.get("citationKey") or _match(_CITATION_KEY_RE, extra)
    creators = [c for c in data.get("creators", ()) if c.get("creatorType", "author") == "author"]
    creators = creators or list(data.get("creators", ()))
    return Reference(
        "zotero",
        title=data.get("title") or None,
        authors=tuple(
            c.get("name") or format_name(c.get("lastName", ""), c.get("firstName", ""))
            for c in creators
        ),
        year=year_in(data.get("date")),
        doi=normalize_doi(data.get("DOI") or _match(_EXTRA_DOI_RE, extra)),
        venue=next((data[name] for name in _VENUE_FIELDS if data.get(name)), None),
        key=key or None,
    )


def _match(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return found.group(1) if found else None
