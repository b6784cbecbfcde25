"""An emulated Zotero 7 local API (``/api/users/0/...``) serving a library of real files.

It answers the way Zotero 7's ``server_localAPI.js`` does: version 3 only (header
``Zotero-API-Version: 3``), user id 0 only, 403 when the local API is switched off, JSON
items ``{key, version, library, links, meta, data}``; an imported file's attachment links
to the file as ``links.enclosure.href`` (a ``file://`` URL, with ``length`` only when the
file exists); ``/items/{key}/file`` answers 302 with that URL as ``Location``, for linked
files too; ``/items/{key}/file/view/url`` answers with the URL as text.

>>> zot = FakeZotero()
>>> item = zot.add_item("Review 2026", title="S2ORC", creators=["Kyle Lo"], date="2020",
...                     citation_key="lo2020", pdf=corpus / "acl2020-s2orc.pdf")
>>> with zot:
...     load_papers(zotero("Review 2026", url=zot.url))
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from ._service import LoopbackService

__all__ = ["FakeZotero"]

_KEY_CHARS = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ"
_CONTENT_TYPES = {".pdf": "application/pdf", ".txt": "text/plain", ".md": "text/markdown"}


class FakeZotero(LoopbackService):
    """Zotero 7's local API on loopback; ``add_item`` fills its library.

    ``enabled=False`` answers every request 403, as Zotero does while "Allow other
    applications on this computer to communicate with Zotero" is off.
    """

    name = "zotero"

    def __init__(self, *, enabled: bool = True, port: int = 0) -> None:
        super().__init__(port=port)
        self.enabled = enabled
        self.collections: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self._keys = ("".join(chars) for chars in itertools.product(_KEY_CHARS, repeat=8))
        self._version = itertools.count(1)

    # -- the library ---------------------------------------------------------------------

    def add_collection(self, name: str, parent: str | None = None) -> str:
        key = next(self._keys)
        self.collections[key] = {
            "key": key,
            "version": next(self._version),
            "data": {"key": key, "name": name, "parentCollection": parent or False},
        }
        return key

    def add_item(
        self,
        collection: str | None = None,
        *,
        title: str,
        creators: Sequence[str] = (),
        date: str = "",
        item_type: str = "journalArticle",
        doi: str = "",
        venue: str = "",
        citation_key: str = "",
        extra: str = "",
        pdf: Path | None = None,
        link_mode: str = "imported_file",
    ) -> str:
        """A regular item (in ``collection``, made if new) with ``pdf`` as its attachment.
        ``citation_key`` goes where Zotero 7 keeps it (``citationKey``); Better BibTeX's
        ``Citation Key: ...`` line can be given in ``extra``."""
        key = next(self._keys)
        collections = [self._collection_key(collection)] if collection else []
        data: dict[str, Any] = {
            "key": key,
            "version": next(self._version),
            "itemType": item_type,
            "title": title,
            "creators": [_creator(name) for name in creators],
            "date": date,
            "DOI": doi,
            "extra": extra,
            "collections": collections,
            "tags": [],
            "relations": {},
        }
        data["publicationTitle" if item_type == "journalArticle" else "proceedingsTitle"] = venue
        if citation_key:
            data["citationKey"] = citation_key
        self.items[key] = {"key": key, "data": data}
        if pdf is not None:
            self.add_attachment(key, pdf, link_mode=link_mode)
        return key

    def add_attachment(self, parent: str, file: Path, *, link_mode: str = "imported_file") -> str:
        key = next(self._keys)
        content_type = _CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
        data = {
            "key": key,
            "version": next(self._version),
            "itemType": "attachment",
            "parentItem": parent,
            "linkMode": link_mode,
            "title": "Full Text PDF",
            "contentType": content_type,
            "charset": "",
            "filename": file.name,
            "tags": [],
            "relations": {},
        }
        if link_mode == "linked_file":
            data["path"] = str(file)
        self.items[key] = {"key": key, "data": data, "file": file, "url": file.absolute().as_uri()}
        return key

    def _collection_key(self, name: str) -> str:
        for key, collection in self.collections.items():
            if collection["data"]["name"] == name:
                return key
        return self.add_collection(name)

    # -- the API --------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        users = "/api/users/{user}"
        routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
            "/api/": self._root,
            users + "/collections": self._collections,
            users + "/collections/top": self._collections,
            users + "/collections/{collection}": self._collection,
            users + "/collections/{collection}/items": self._items,
            users + "/collections/{collection}/items/top": self._items,
            users + "/items": self._items,
            users + "/items/top": self._items,
            users + "/items/{item}": self._item,
            users + "/items/{item}/children": self._children,
            users + "/items/{item}/file": self._file,
            users + "/items/{item}/file/view": self._file,
            users + "/items/{item}/file/view/url": self._file,
        }
        for path, handler in routes.items():
            app.router.add_get(path, self._guarded(handler))

    def _guarded(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """What Zotero checks before any endpoint: enabled, API version 3, user 0."""

        async def guarded(request: web.Request) -> web.Response:
            if not self.enabled:
                return _text(403, "Local API is not enabled")
            version = request.headers.get("Zotero-API-Version") or request.query.get("v") or "3"
            if version != "3":
                return _text(501, f"API version not implemented: {version}")
            if request.match_info.get("user", "0") != "0":
                return _text(400, _ONLY_USER_0)
            return await handler(request)

        return guarded

    async def _root(self, request: web.Request) -> web.Response:
        return _text(200, "Nothing to see here.")

    async def _collections(self, request: web.Request) -> web.Response:
        top = request.path.endswith("/top")
        found = [
            c for c in self.collections.values() if not top or not c["data"]["parentCollection"]
        ]
        return self._json(request, [self._collection_json(c) for c in found])

    async def _collection(self, request: web.Request) -> web.Response:
        collection = self.collections.get(request.match_info["collection"])
        if collection is None:
            return _text(404, "Not found")
        return self._json(request, self._collection_json(collection))

    async def _items(self, request: web.Request) -> web.Response:
        top = request.path.endswith("/top")
        wanted = request.match_info.get("collection")
        if wanted is not None and wanted not in self.collections:
            return _text(404, "Not found")
        found = [
            item
            for item in self.items.values()
            if (not top or not item["data"].get("parentItem"))
            and (wanted is None or wanted in self._collections_of(item))
        ]
        return self._json(request, [self._item_json(i) for i in found])

    async def _item(self, request: web.Request) -> web.Response:
        item = self.items.get(request.match_info["item"])
        return self._json(request, self._item_json(item)) if item else _text(404, "Not found")

    async def _children(self, request: web.Request) -> web.Response:
        parent = request.match_info["item"]
        found = [i for i in self.items.values() if i["data"].get("parentItem") == parent]
        return self._json(request, [self._item_json(i) for i in found])

    async def _file(self, request: web.Request) -> web.Response:
        item = self.items.get(request.match_info["item"])
        if item is None:
            return _text(404, "Not found")
        if "file" not in item:
            return _text(400, f"Not a file attachment: {item['key']}")
        if request.path.endswith("/url"):
            return _text(200, item["url"])
        return web.Response(
            status=302, headers={"Location": item["url"], "Zotero-API-Version": "3"}
        )

    # -- JSON as Zotero writes it -----------------------------------------------------------

    def _collections_of(self, item: dict[str, Any]) -> list[str]:
        parent = item["data"].get("parentItem")
        return list(
            self.items[parent]["data"]["collections"] if parent else item["data"]["collections"]
        )

    def _links(self, kind: str, key: str) -> dict[str, Any]:
        return {
            "self": {"href": f"{self.url}/api/users/0/{kind}/{key}", "type": "application/json"}
        }

    def _collection_json(self, collection: dict[str, Any]) -> dict[str, Any]:
        key = collection["key"]
        count = sum(key in self._collections_of(i) for i in self.items.values())
        return {
            "key": key,
            "version": collection["version"],
            "library": _LIBRARY,
            "links": self._links("collections", key),
            "meta": {"numCollections": 0, "numItems": count},
            "data": collection["data"],
        }

    def _item_json(self, item: dict[str, Any]) -> dict[str, Any]:
        key, data = item["key"], item["data"]
        links = self._links("items", key)
        meta: dict[str, Any] = {}
        if data["itemType"] == "attachment":
            if data.get("parentItem"):
                links["up"] = {
                    "href": f"{self.url}/api/users/0/items/{data['parentItem']}",
                    "type": "application/json",
                }
            if data["linkMode"] in ("imported_file", "imported_url"):
                file = Path(item["file"])
                enclosure: dict[str, Any] = {
                    "type": data["contentType"],
                    "href": item["url"],
                    "title": file.name,
                }
                if file.is_file():  # Zotero leaves length out when the file is not on disk
                    enclosure["length"] = file.stat().st_size
                links["enclosure"] = enclosure
        else:
            children = [i for i in self.items.values() if i["data"].get("parentItem") == key]
            meta = {"numChildren": len(children)}
            names = [c.get("lastName") or c.get("name", "") for c in data["creators"]]
            if names:
                meta["creatorSummary"] = names[0] + (" et al." if len(names) > 2 else "")
            if data.get("date"):
                meta["parsedDate"] = data["date"]
            pdfs = [c for c in children if c["data"].get("contentType") == "application/pdf"]
            if pdfs:
                links["attachment"] = {
                    "href": f"{self.url}/api/users/0/items/{pdfs[0]['key']}",
                    "type": "application/json",
                    "attachmentType": "application/pdf",
                }
        return {
            "key": key,
            "version": data["version"],
            "library": _LIBRARY,
            "links": links,
            "meta": meta,
            "data": data,
        }

    def _json(self, request: web.Request, body: Any) -> web.Response:
        headers = {"Zotero-API-Version": "3", "Zotero-Schema-Version": "29"}
        if isinstance(body, list):
            headers["Total-Results"] = str(len(body))
            start = int(request.query.get("start", 0))
            limit = int(request.query.get("limit", 0)) or len(body)
            body = body[start : start + limit]
        return web.Response(
            text=json.dumps(body, indent=4), content_type="application/json", headers=headers
        )


_ONLY_USER_0 = "Only data for the logged-in user is available locally -- use userID 0"
_LIBRARY = {"type": "user", "id": 0, "name": "Local library", "links": {}}


def _creator(name: str) -> dict[str, str]:
    if " " not in name.strip():
        return {"creatorType": "author", "name": name}
    first, _, last = name.strip().rpartition(" ")
    return {"creatorType": "author", "firstName": first, "lastName": last}


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers={"Zotero-API-Version": "3"})
