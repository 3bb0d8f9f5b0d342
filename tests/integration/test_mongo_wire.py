"""The embedded Mongo-wire server as the launcher runs it (`shared.launcher.mongo_wire`), over TCP."""

import math

import pytest
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
