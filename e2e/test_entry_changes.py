"""The README's "Chat features" lines for the changes that go through the
message log (edit, react, delete, reply, idempotent sends, remove-member,
leave), against the real binaries with independent clients; and the
archiver killed with SIGKILL in the middle of a stream of edits."""

import asyncio
import json
import signal
import time

import requests
import websockets

from test_live import enter, recv, user


def test_chat_features_from_the_readme(stack):
    token, token2 = user(stack, "changer"), user(stack, "reactor")
    auth, auth2 = {"Authorization": token}, {"Authorization": token2}
    room = requests.post(f"{stack.base}/create-room", headers=auth, json={"Name": "changes"}).json()["RoomID"]
    assert requests.put(f"{stack.base}/join", headers=auth2, json={"RoomID": room}).status_code == 200

    async def session():
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await enter(ws, room)
            await ws.send(json.dumps({"Type": "message", "Text": "my message"}))
            frames = [await recv(ws), await recv(ws)]
            first = next(f for f in frames if f["Type"] == "sent")["MessageID"]

            reply = {"Type": "message", "Text": "re: my message", "ReplyTo": first, "Key": "c1-000017"}
            await ws.send(json.dumps(reply))
            frames = [await recv(ws), await recv(ws)]
            sent = next(f for f in frames if f["Type"] == "sent")
            copy = next(f for f in frames if f["Type"] == "message")
            assert copy["ReplyTo"] == first and copy["ID"] == sent["MessageID"]
            await ws.send(json.dumps(reply))
            assert await recv(ws) == sent, "a retry with the same Key: the same answer, nothing new"

            # curl -X PATCH .../messages/1/<id> -d '{"Text":"fixed"}'
            r = requests.patch(f"{stack.base}/messages/{room}/{first}", headers=auth, data='{"Text":"fixed"}')
            assert r.status_code == 200 and r.json()["status"] == "edited", r.text
            edit = await recv(ws)
            assert (edit["Type"], edit["ID"], edit["MessageID"], edit["Text"]) == ("edit", r.json()["EventID"], first, "fixed")
            # curl -X PUT .../reactions -d '{"Emoji":"👍","Added":true}'
            r = requests.put(f"{stack.base}/messages/{room}/{first}/reactions", headers=auth2, json={"Emoji": "👍", "Added": True})
            assert (r.status_code, r.json()["status"]) == (200, "ok")
            reaction = await recv(ws)
            assert (reaction["Type"], reaction["Emoji"], reaction["Added"]) == ("reaction", "👍", True)
            # curl "localhost:8080/messages/1?Limit=..." : the entry in its latest state.
            history = requests.get(f"{stack.base}/messages/{room}", headers=auth).json()
            entry = next(e for e in history if e["ID"] == first)
            assert entry["Text"] == "fixed" and "EditedAt" in entry and list(entry["Reactions"]) == ["👍"], entry
            assert next(e for e in history if e["ID"] == sent["MessageID"])["ReplyTo"] == first
            # curl -X DELETE .../messages/1/<id>
            r = requests.delete(f"{stack.base}/messages/{room}/{first}", headers=auth)
            assert (r.status_code, r.json()["status"]) == (200, "deleted")
            assert (await recv(ws))["Type"] == "delete"
            r = requests.patch(f"{stack.base}/messages/{room}/{first}", headers=auth, json={"Text": "back?"})
            assert (r.status_code, r.json()) == (404, {"Error": "no such message"})

            # The other member's socket is cut off when the creator removes them.
            async with websockets.connect(f"{stack.ws}?token={token2}") as other:
                await enter(other, room)
                r = requests.put(f"{stack.base}/remove-member", headers=auth, data=json.dumps({"RoomID": room, "UID": reactor_uid()}))
                assert (r.status_code, r.json()) == (200, {"status": "removed"})
                assert await recv(other) == {"Type": "enter", "RoomID": 0}
                assert await recv(other) == {"Type": "error", "Error": "removed from room"}
            leave = await recv(ws)
            assert (leave["Type"], leave["UID"]) == ("leave", reactor_uid())

    def reactor_uid():
        return requests.get(f"{stack.base}/profile", headers=auth2).json()["UID"]

    asyncio.run(session())
    # curl -X PUT localhost:8080/leave -d '{"RoomID":...}'
    r = requests.put(f"{stack.base}/leave", headers=auth, json={"RoomID": room})
    assert (r.status_code, r.json()) == (200, {"status": "left"})
    r = requests.put(f"{stack.base}/leave", headers=auth, json={"RoomID": room})
    assert (r.status_code, r.json()) == (409, {"Error": "not room member"})


def test_an_archiver_killed_in_the_middle_of_a_stream_of_edits_ends_in_the_right_state(stack):
    token = user(stack, "editor")
    auth = {"Authorization": token}
    room = requests.post(f"{stack.base}/create-room", headers=auth, json={"Name": "edits"}).json()["RoomID"]

    async def send():
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await enter(ws, room)
            await ws.send(json.dumps({"Type": "message", "Text": "draft"}))
            while (frame := await recv(ws))["Type"] != "sent":
                pass
            return frame["MessageID"]

    message = asyncio.run(send())
    session = requests.Session()
    last = None
    for n in range(400):
        r = session.patch(f"{stack.base}/messages/{room}/{message}", headers=auth, json={"Text": f"edit {n}"})
        assert r.status_code == 200, r.text
        last = r.json()["EventID"]
        if n % 130 == 40:
            # Killed outright, wherever it is, and started again.
            stack.processes["archiver"].send_signal(signal.SIGKILL)
            stack.processes["archiver"].wait(timeout=10)
            stack.start("archiver")
    deadline = time.monotonic() + 90
    while stack.psql(f"SELECT text || ' ' || edit_id FROM messages WHERE id = {message}").strip() != f"edit 399 {last}":
        assert time.monotonic() < deadline, stack.psql(f"SELECT text, edit_id FROM messages WHERE id = {message}")
        time.sleep(0.2)
    assert stack.psql(f"SELECT count(*) FROM message_changes WHERE message_id = {message}").strip() == "400"
    assert stack.psql("SELECT count(*) FROM dead_letters").strip() == "0"
