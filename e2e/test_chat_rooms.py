"""The README's "Chat features" lines for direct rooms, read marks, unread
counts and search, in the README's order, against the real binaries on a
fresh database (so the ids are the README's), with independent clients:
requests, websockets and grpcio."""

import asyncio
import json
import time

import grpc
import requests
import websockets


def login(base, name):
    body = {"Username": name, "Email": f"{name}@example.com", "Password": "password"}
    assert requests.post(f"{base}/register", json=body).status_code == 201
    r = requests.put(f"{base}/login", json={"Email": body["Email"], "Password": "password"})
    return r.json()["token"]


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def say(stack, token, room, text):
    """Sends `text` to `room` over a socket, as "Try it" does; its id."""

    async def session():
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await recv(ws)
            await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
            assert await recv(ws) == {"Type": "enter", "RoomID": room}
            await ws.send(json.dumps({"Type": "message", "Text": text}))
            while (frame := await recv(ws))["Type"] != "sent":
                pass
            return frame["MessageID"]

    return asyncio.run(session())


def eventually(what, check):
    deadline = time.monotonic() + 30
    while not (answer := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return answer


def test_readme_chat_rooms_lines_in_order(stack, chat):
    base = stack.base
    # The session of "Try it": user 1, user 2, room 1 with both, "my message".
    token = login(base, "user")
    auth = {"Authorization": token}
    assert requests.post(f"{base}/create-room", headers=auth, data='{"Name":"GeneralChat","IsPrivate":false}').json() == {"RoomID": 1}
    token2 = login(base, "user2")
    assert requests.put(f"{base}/invite", headers=auth, data='{"RoomID":1,"UID":2}').status_code == 200
    message_id = say(stack, token, 1, "my message")

    # curl -X POST localhost:8080/direct -H "Authorization: $TOKEN" -d '{"UID":2}'
    r = requests.post(f"{base}/direct", headers=auth, data='{"UID":2}')
    assert (r.status_code, r.json()) == (200, {"RoomID": 2})
    r = requests.post(f"{base}/direct", headers={"Authorization": token2}, data='{"UID":1}')
    assert (r.status_code, r.json()) == (200, {"RoomID": 2}), "the same from the other side"
    # curl localhost:8080/room/2 -H "Authorization: $TOKEN"
    room = requests.get(f"{base}/room/2", headers=auth).json()
    assert (room["Name"], room["IsPrivate"], room["Kind"], room["CreatorUID"]) == ("", True, "direct", 1)
    assert requests.get(f"{base}/room/1").json()["Kind"] == "group"
    # curl -X POST localhost:8080/direct -H "Authorization: $TOKEN" -d '{"UID":1}'
    r = requests.post(f"{base}/direct", headers=auth, data='{"UID":1}')
    assert r.status_code == 400 and "oneself" in r.json()["Error"]
    assert requests.post(f"{base}/direct", headers=auth, data='{"UID":99}').status_code == 404
    # curl -X PUT localhost:8080/invite -H "Authorization: $TOKEN" -d '{"RoomID":2,"UID":3}'
    r = requests.put(f"{base}/invite", headers=auth, data='{"RoomID":2,"UID":3}')
    assert (r.status_code, r.json()) == (403, {"Error": "cannot invite into a direct room"})
    # grpcurl ... chat.v1.RoomService/OpenDirect
    pb, rpc = chat
    channel = grpc.insecure_channel(stack.grpc)
    rooms = rpc.RoomServiceStub(channel)
    messages = rpc.MessageServiceStub(channel)
    metadata = [("authorization", f"Bearer {token}")]
    assert rooms.OpenDirect(pb.OpenDirectRequest(uid=2), metadata=metadata).room_id == 2

    # curl -X PUT localhost:8080/read -H "Authorization: $TOKEN" -d '{"RoomID":1,"MessageID":...}'
    r = requests.put(f"{base}/read", headers=auth, data=json.dumps({"RoomID": 1, "MessageID": message_id}))
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    # curl localhost:8080/unread -H "Authorization: $TOKEN"
    expected = {
        "Rooms": [
            {"RoomID": 1, "Unread": 0, "LastReadID": message_id, "LastMessageID": message_id},
            {"RoomID": 2, "Unread": 0, "LastReadID": 0, "LastMessageID": 0},
        ]
    }
    eventually("the message is archived", lambda: requests.get(f"{base}/unread", headers=auth).json() == expected)
    # User 2 has not read it: over gRPC, then marked from a socket.
    metadata2 = [("authorization", f"Bearer {token2}")]
    unread = rooms.ListUnread(pb.ListUnreadRequest(), metadata=metadata2).rooms
    assert [(u.room_id, u.unread, u.last_message_id) for u in unread] == [(1, 1, message_id), (2, 0, 0)]

    async def mark_from_a_socket():
        async with websockets.connect(f"{stack.ws}?token={token2}") as ws:
            await recv(ws)
            await ws.send(json.dumps({"Type": "read", "MessageID": message_id, "Ref": "r1"}))
            assert await recv(ws) == {"Type": "error", "Error": "not in room", "Ref": "r1"}
            await ws.send(json.dumps({"Type": "enter", "RoomID": 1}))
            assert await recv(ws) == {"Type": "enter", "RoomID": 1}
            # > {"Type":"read","MessageID":...}
            await ws.send(json.dumps({"Type": "read", "MessageID": message_id}))

    asyncio.run(mark_from_a_socket())
    eventually(
        "the socket's mark is stored",
        lambda: rooms.ListUnread(pb.ListUnreadRequest(), metadata=metadata2).rooms[0].last_read_id == message_id,
    )

    # curl "localhost:8080/search?q=my%20message" -H "Authorization: $TOKEN"
    found = requests.get(f"{base}/search?q=my%20message", headers=auth).json()
    assert [(m["Type"], m["ID"], m["Text"]) for m in found] == [("message", message_id, "my message")]
    # curl "localhost:8080/search?q=message&RoomID=1&LastID=...&Limit=20" -H "Authorization: $TOKEN"
    r = requests.get(f"{base}/search?q=message&RoomID=1&LastID={message_id}&Limit=20", headers=auth)
    assert [m["ID"] for m in r.json()] == [message_id]
    assert requests.get(f"{base}/search?q=message&LastID={message_id - 1}", headers=auth).json() == []
    # curl "localhost:8080/search?q=" -H "Authorization: $TOKEN"
    r = requests.get(f"{base}/search?q=", headers=auth)
    assert (r.status_code, r.json()) == (400, {"Error": "empty query"})
    # grpcurl ... -d '{"query":"my message"}' ... chat.v1.MessageService/Search
    found = messages.Search(pb.SearchRequest(query="my message"), metadata=metadata).messages
    assert [(m.id, m.text) for m in found] == [(message_id, "my message")]
    channel.close()
