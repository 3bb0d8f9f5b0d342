"""The embedded Mongo-wire server as the launcher runs it (`shared.launcher.mongo_wire`), over TCP."""

import math
from datetime import datetime

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.errors import WriteError

from shared.launcher.servers import mongo_wire_server

pytestmark = pytest.mark.integration


async def test_a_document_json_cannot_hold_is_refused_and_one_whose_words_look_like_it_is_stored(tmp_path):
    """Only a document whose text holds `NaN` or `Infinity` goes through the engine's JSON check: a float
    JSON has no word for is refused as it always was, and text that merely says those words is kept."""
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url)
        tickets = client["json_check"]["tickets"]
        try:
            await tickets.insert_one({"_id": "T-1", "subject": "NaN shown as Infinity -Infinity", "score": 1.5})
            for number, value in enumerate((math.nan, math.inf, -math.inf), start=2):
                with pytest.raises(WriteError, match="Invalid JSON document"):
                    await tickets.insert_one({"_id": f"T-{number}", "score": value})
            stored = await tickets.find({}).to_list()
        finally:
            await client.close()

    assert stored == [{"_id": "T-1", "subject": "NaN shown as Infinity -Infinity", "score": 1.5}]


PLAIN = {
    "_id": "D-1",
    "text": "Grüße",
    "count": 2**40,
    "small": 7,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "nested": {"items": [1, {"deep": ["x", {"deeper": "y"}]}], "empty": {}},
}
MARKED = {
    **PLAIN,
    "text": 'Grüße, {"$date": 1} and __neosqlite_binary__',
    "when": datetime(2026, 12, 5, 9, 30, 15, 123000),
    "oid": ObjectId("656e0b0e0b0e0b0e0b0e0b0e"),
}


@pytest.mark.parametrize("document", [PLAIN, MARKED], ids=["plain", "marked"])
async def test_documents_read_back_as_written_whatever_their_values(tmp_path, document):
    """The server reads and copies plain documents by a shorter way than its engine's own: values of every
    kind come back as they went in, through inserts, updates and replaces, and so do those the engine
    stores in forms of its own (dates, ObjectIds) and text that spells its markers."""
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url)
        documents = client["plain"]["documents"]
        try:
            await documents.insert_one(document)
            inserted = await documents.find_one({"_id": "D-1"})
            await documents.update_one({"_id": "D-1"}, {"$set": {"nested.items": [2, {"deep": []}]}, "$inc": {"count": 1}})
            updated = await documents.find_one({"_id": "D-1"})
            await documents.replace_one({"_id": "D-1"}, {**document, "small": 8})
            replaced = await documents.find_one({"_id": "D-1"})
        finally:
            await client.close()

    assert inserted == document
    assert updated == {**document, "count": 2**40 + 1, "nested": {"items": [2, {"deep": []}], "empty": {}}}
    assert replaced == {**document, "small": 8}
