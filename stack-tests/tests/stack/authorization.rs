//! The authorization matrix: every REST endpoint, WebSocket frame and gRPC
//! method, called by each of {anonymous, stranger, member, room creator},
//! answers as API.md says. Each cell runs on a scene of its own (a room of
//! the creator's with the member in it and a message of the creator's), so
//! that one cell's leave or deletion changes no other's. The rooms are
//! private unless a row says public: a private room is unknown (404) to
//! non-members, a public one is known but closed (403) to them.

use chat_proto::v1::{
    ChangeNameRequest, CheckMembershipRequest, CreateRoomRequest, DeleteRequest, EditRequest, GetProfileRequest,
    GetRoomRequest, HistoryRequest, InviteRequest, JoinRoomRequest, LeaveRoomRequest, ListMyRoomsRequest,
    ListOnlineRequest, ListUnreadRequest, LoginRequest, MarkReadRequest, OpenDirectRequest, ReactRequest,
    RegisterRequest, RemoveMemberRequest, SearchRequest, SendRequest, SubscribeRequest, TypingRequest,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stack_tests::{Grpc, TestApp, User, Ws, bearer};
use tonic::Code;

#[derive(Clone, Copy, Debug)]
enum Role {
    Anonymous,
    Stranger,
    Member,
    Creator,
}

const ROLES: [Role; 4] = [Role::Anonymous, Role::Stranger, Role::Member, Role::Creator];

/// The users, registered once: the room's creator, its member, a stranger
/// to it, and someone else to invite.
struct Cast {
    creator: User,
    member: User,
    stranger: User,
    outsider: User,
}

impl Cast {
    async fn new(app: &TestApp) -> Self {
        Self {
            creator: app.register("creator").await,
            member: app.register("member").await,
            stranger: app.register("stranger").await,
            outsider: app.register("outsider").await,
        }
    }

    fn token(&self, role: Role) -> Option<&str> {
        match role {
            Role::Anonymous => None,
            Role::Stranger => Some(&self.stranger.token),
            Role::Member => Some(&self.member.token),
            Role::Creator => Some(&self.creator.token),
        }
    }
}

/// One cell's world: a fresh room with the member in it and a message of
/// the creator's; `n` makes names unique.
struct Scene {
    room: i64,
    message: i64,
    n: usize,
}

impl Scene {
    async fn new(app: &TestApp, grpc: &mut Grpc, cast: &Cast, public: bool, n: usize) -> Self {
        let room = app.create_room(&cast.creator, &format!("room {n}"), !public).await;
        let invite = json!({"RoomID": room, "UID": cast.member.uid});
        assert_eq!(app.put("/invite", Some(&cast.creator.token), invite).await.0, StatusCode::OK);
        let message = grpc.send(&cast.creator, room, "the creator's message").await.expect("sent");
        Self { room, message, n }
    }
}

/// A REST call of a scene: method, path and body.
type RestCall = fn(&Scene, &Cast) -> (Method, String, Option<Value>);

#[tokio::test]
async fn every_rest_endpoint_answers_each_kind_of_caller_as_the_contract_says() {
    #[rustfmt::skip]
    let rows: &[(&str, bool, RestCall, [u16; 4])] = &[
        //                                                                 anonymous stranger member creator
        ("GET /room", false, |s, _| (Method::GET, format!("/room/{}", s.room), None), [404, 404, 200, 200]),
        ("GET /room, public", true, |s, _| (Method::GET, format!("/room/{}", s.room), None), [200, 200, 200, 200]),
        ("GET /messages", false, |s, _| (Method::GET, format!("/messages/{}", s.room), None), [401, 404, 200, 200]),
        ("GET /messages, public", true, |s, _| (Method::GET, format!("/messages/{}", s.room), None), [401, 403, 200, 200]),
        ("PUT /join", false, |s, _| (Method::PUT, "/join".into(), Some(json!({"RoomID": s.room}))), [401, 403, 409, 409]),
        ("PUT /join, public", true, |s, _| (Method::PUT, "/join".into(), Some(json!({"RoomID": s.room}))), [401, 200, 409, 409]),
        ("PUT /invite", false, |s, c| (Method::PUT, "/invite".into(), Some(json!({"RoomID": s.room, "UID": c.outsider.uid}))), [401, 404, 403, 200]),
        ("PUT /invite, public", true, |s, c| (Method::PUT, "/invite".into(), Some(json!({"RoomID": s.room, "UID": c.outsider.uid}))), [401, 403, 403, 200]),
        ("PUT /leave", false, |s, _| (Method::PUT, "/leave".into(), Some(json!({"RoomID": s.room}))), [401, 404, 200, 200]),
        ("PUT /remove-member", false, |s, c| (Method::PUT, "/remove-member".into(), Some(json!({"RoomID": s.room, "UID": c.member.uid}))), [401, 404, 403, 200]),
        ("PATCH /messages", false, |s, _| (Method::PATCH, format!("/messages/{}/{}", s.room, s.message), Some(json!({"Text": "edited"}))), [401, 404, 403, 200]),
        ("DELETE /messages", false, |s, _| (Method::DELETE, format!("/messages/{}/{}", s.room, s.message), None), [401, 404, 403, 200]),
        ("PUT reactions", false, |s, _| (Method::PUT, format!("/messages/{}/{}/reactions", s.room, s.message), Some(json!({"Emoji": "👍"}))), [401, 404, 200, 200]),
        ("PUT reactions, public", true, |s, _| (Method::PUT, format!("/messages/{}/{}/reactions", s.room, s.message), Some(json!({"Emoji": "👍"}))), [401, 403, 200, 200]),
        ("PUT /read", false, |s, _| (Method::PUT, "/read".into(), Some(json!({"RoomID": s.room, "MessageID": s.message}))), [401, 404, 200, 200]),
        ("GET /room/online", false, |s, _| (Method::GET, format!("/room/{}/online", s.room), None), [401, 404, 200, 200]),
        ("GET /room/online, public", true, |s, _| (Method::GET, format!("/room/{}/online", s.room), None), [401, 403, 200, 200]),
        ("GET /search in a room", false, |s, _| (Method::GET, format!("/search?q=message&RoomID={}", s.room), None), [401, 404, 200, 200]),
        ("GET /search", false, |_, _| (Method::GET, "/search?q=message".into(), None), [401, 200, 200, 200]),
        ("GET /unread", false, |_, _| (Method::GET, "/unread".into(), None), [401, 200, 200, 200]),
        ("GET /rooms", false, |_, _| (Method::GET, "/rooms".into(), None), [401, 200, 200, 200]),
        ("POST /create-room", false, |s, _| (Method::POST, "/create-room".into(), Some(json!({"Name": format!("new {}", s.n)}))), [401, 201, 201, 201]),
        ("POST /direct with the creator", false, |_, c| (Method::POST, "/direct".into(), Some(json!({"UID": c.creator.uid}))), [401, 200, 200, 400]),
        ("GET /profile", false, |_, _| (Method::GET, "/profile".into(), None), [401, 200, 200, 200]),
        ("GET /profile of the creator", false, |_, c| (Method::GET, format!("/profile/{}", c.creator.uid), None), [200, 200, 200, 200]),
        ("PUT /change-name", false, |s, _| (Method::PUT, "/change-name".into(), Some(json!({"NewName": format!("renamed{}", s.n)}))), [401, 200, 200, 200]),
        ("POST /register", false, |s, _| (Method::POST, "/register".into(), Some(json!({"Username": format!("new{}", s.n), "Email": format!("new{}@example.com", s.n), "Password": "password"}))), [201, 201, 201, 201]),
        ("PUT /login", false, |_, _| (Method::PUT, "/login".into(), Some(json!({"Email": "outsider@example.com", "Password": "password"}))), [200, 200, 200, 200]),
        ("GET /healthz", false, |_, _| (Method::GET, "/healthz".into(), None), [200, 200, 200, 200]),
        ("GET /readyz", false, |_, _| (Method::GET, "/readyz".into(), None), [200, 200, 200, 200]),
        ("GET /openapi.json", false, |_, _| (Method::GET, "/openapi.json".into(), None), [200, 200, 200, 200]),
        ("GET /metrics", false, |_, _| (Method::GET, "/metrics".into(), None), [200, 200, 200, 200]),
    ];
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let cast = Cast::new(&app).await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for (what, public, call, expected) in rows {
        for (role, expected) in ROLES.into_iter().zip(expected) {
            n += 1;
            let scene = Scene::new(&app, &mut grpc, &cast, *public, n).await;
            let (method, path, body) = call(&scene, &cast);
            let body = body.map(|body| body.to_string());
            let (status, answer) = app.call(method, &path, cast.token(role), body.as_deref()).await;
            if status.as_u16() != *expected {
                wrong.push(format!("{what} as {role:?}: {status} {answer}, expected {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The creator's e-mail address is in their own profile only.
    let path = format!("/profile/{}", cast.creator.uid);
    assert_eq!(app.get(&path, Some(&cast.creator.token)).await.1["Email"], "creator@example.com");
    for token in [None, Some(cast.member.token.as_str())] {
        assert_eq!(app.get(&path, token).await.1.get("Email"), None);
    }
}

/// What a socket was answered: a frame's `Type`, `error: <text>`, or
/// `nothing` for a frame that is answered only when refused. The room's
/// messages (one's own copies included, which come before or after their
/// `sent`) are passed over.
async fn answer(ws: &mut Ws, frame: Value) -> String {
    ws.send(frame).await;
    // Frames are answered in order: one that is always refused, sent
    // next, tells a silent answer from a late one.
    ws.send(json!({"Type": "unknown", "Ref": "probe"})).await;
    let mut said = None;
    loop {
        let next = ws.recv().await;
        match next["Type"].as_str() {
            Some("message") => continue,
            Some("error") if next["Ref"] == "probe" => return said.unwrap_or_else(|| "nothing".into()),
            Some("error") => said = Some(format!("error: {}", next["Error"].as_str().unwrap_or_default())),
            Some(kind) => said = Some(kind.to_owned()),
            None => panic!("a frame without a type: {next}"),
        }
    }
}

/// A frame of a scene, as one of its users sends it.
type WsFrame = fn(&Scene, &User) -> Value;

#[tokio::test]
async fn every_websocket_frame_answers_each_kind_of_caller_as_the_contract_says() {
    // An anonymous caller never gets a socket: the upgrade is refused.
    let app = TestApp::spawn().await;
    let url = format!("{}/ws", app.base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("an anonymous upgrade answered {other:?}"),
    }
    let mut grpc = app.grpc().await;
    let cast = Cast::new(&app).await;
    // In order, on one socket per caller; the frames after `enter` act in
    // the room the socket is in, if any.
    #[rustfmt::skip]
    let rows: &[(&str, WsFrame, [&str; 3])] = &[
        //                                                                           stranger               member    creator
        ("enter", |s, _| json!({"Type": "enter", "RoomID": s.room}), ["error: not room member", "enter", "enter"]),
        ("message", |_, _| json!({"Type": "message", "Text": "hello"}), ["error: not in room", "sent", "sent"]),
        ("message replying", |s, _| json!({"Type": "message", "Text": "re", "ReplyTo": s.message}), ["error: not in room", "sent", "sent"]),
        ("typing", |_, _| json!({"Type": "typing"}), ["error: not in room", "nothing", "nothing"]),
        ("read", |s, _| json!({"Type": "read", "MessageID": s.message}), ["error: not in room", "nothing", "nothing"]),
        ("auth with one's own token", |_, user| json!({"Type": "auth", "Token": user.token}), ["auth", "auth", "auth"]),
        ("leave the room", |_, _| json!({"Type": "enter", "RoomID": 0}), ["error: already in room", "enter", "enter"]),
    ];
    let scene = Scene::new(&app, &mut grpc, &cast, false, 0).await;
    let mut wrong = Vec::new();
    for (index, (role, user)) in
        [(Role::Stranger, &cast.stranger), (Role::Member, &cast.member), (Role::Creator, &cast.creator)]
            .into_iter()
            .enumerate()
    {
        let mut ws = Ws::connect(&app.base, &user.token).await;
        for (what, frame, expected) in rows {
            let said = answer(&mut ws, frame(&scene, user)).await;
            if said != expected[index] {
                wrong.push(format!("{what} as {role:?}: {said}, expected {}", expected[index]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Calls one gRPC method of a scene as the caller with `token`.
async fn grpc_call(grpc: &mut Grpc, method: &str, s: &Scene, c: &Cast, token: Option<&str>) -> Code {
    fn request<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
        match token {
            Some(token) => bearer(&format!("Bearer {token}"), message),
            None => tonic::Request::new(message),
        }
    }
    fn code<T>(answer: Result<T, tonic::Status>) -> Code {
        answer.map_or_else(|status| status.code(), |_| Code::Ok)
    }
    let t = token;
    let (room, message, n) = (s.room, s.message, s.n);
    match method {
        "Register" => code(
            grpc.users
                .register(request(
                    t,
                    RegisterRequest {
                        username: format!("grpc{n}"),
                        email: format!("grpc{n}@example.com"),
                        password: "password".into(),
                    },
                ))
                .await,
        ),
        "Login" => code(
            grpc.users
                .login(request(t, LoginRequest { email: "outsider@example.com".into(), password: "password".into() }))
                .await,
        ),
        "GetProfile" => code(grpc.users.get_profile(request(t, GetProfileRequest { uid: 0 })).await),
        "GetProfile of the creator" => {
            code(grpc.users.get_profile(request(t, GetProfileRequest { uid: c.creator.uid })).await)
        }
        "ChangeName" => {
            code(grpc.users.change_name(request(t, ChangeNameRequest { new_name: format!("renamed{n}") })).await)
        }
        "CreateRoom" => code(
            grpc.rooms.create_room(request(t, CreateRoomRequest { name: format!("grpc {n}"), is_private: true })).await,
        ),
        "JoinRoom" => code(grpc.rooms.join_room(request(t, JoinRoomRequest { room_id: room })).await),
        "Invite" => code(grpc.rooms.invite(request(t, InviteRequest { room_id: room, uid: c.outsider.uid })).await),
        "GetRoom" => code(grpc.rooms.get_room(request(t, GetRoomRequest { room_id: room })).await),
        "ListMyRooms" => code(grpc.rooms.list_my_rooms(request(t, ListMyRoomsRequest {})).await),
        "CheckMembership" => {
            code(grpc.rooms.check_membership(request(t, CheckMembershipRequest { room_id: room })).await)
        }
        "OpenDirect with the creator" => {
            code(grpc.rooms.open_direct(request(t, OpenDirectRequest { uid: c.creator.uid })).await)
        }
        "LeaveRoom" => code(grpc.rooms.leave_room(request(t, LeaveRoomRequest { room_id: room })).await),
        "RemoveMember" => {
            code(grpc.rooms.remove_member(request(t, RemoveMemberRequest { room_id: room, uid: c.member.uid })).await)
        }
        "ListOnline" => code(grpc.rooms.list_online(request(t, ListOnlineRequest { room_id: room })).await),
        "MarkRead" => {
            code(grpc.rooms.mark_read(request(t, MarkReadRequest { room_id: room, message_id: message })).await)
        }
        "ListUnread" => code(grpc.rooms.list_unread(request(t, ListUnreadRequest {})).await),
        "Send" => code(
            grpc.messages
                .send(request(t, SendRequest { room_id: room, text: "hi".into(), ..SendRequest::default() }))
                .await,
        ),
        "History" => {
            code(grpc.messages.history(request(t, HistoryRequest { room_id: room, ..HistoryRequest::default() })).await)
        }
        "Subscribe" => {
            code(grpc.messages.subscribe(request(t, SubscribeRequest { room_id: room, after_id: None })).await)
        }
        "Edit" => code(
            grpc.messages
                .edit(request(t, EditRequest { room_id: room, message_id: message, text: "edited".into() }))
                .await,
        ),
        "Delete" => code(grpc.messages.delete(request(t, DeleteRequest { room_id: room, message_id: message })).await),
        "React" => code(
            grpc.messages
                .react(request(t, ReactRequest { room_id: room, message_id: message, emoji: "👍".into(), added: true }))
                .await,
        ),
        "Typing" => code(grpc.messages.typing(request(t, TypingRequest { room_id: room })).await),
        "Search" => code(
            grpc.messages
                .search(request(
                    t,
                    SearchRequest { query: "message".into(), room_id: room, ..SearchRequest::default() },
                ))
                .await,
        ),
        other => panic!("no method {other}"),
    }
}

#[tokio::test]
async fn every_grpc_method_answers_each_kind_of_caller_as_the_contract_says() {
    use Code::{
        AlreadyExists as Exists, InvalidArgument as Invalid, NotFound, Ok, PermissionDenied as Denied,
        Unauthenticated as Unauth,
    };
    #[rustfmt::skip]
    let rows: &[(&str, [Code; 4])] = &[
        //                               anonymous stranger member  creator
        ("Register",                    [Ok,     Ok,      Ok,     Ok]),
        ("Login",                       [Ok,     Ok,      Ok,     Ok]),
        ("GetProfile",                  [Unauth, Ok,      Ok,     Ok]),
        ("GetProfile of the creator",   [Ok,     Ok,      Ok,     Ok]),
        ("ChangeName",                  [Unauth, Ok,      Ok,     Ok]),
        ("CreateRoom",                  [Unauth, Ok,      Ok,     Ok]),
        ("JoinRoom",                    [Unauth, Denied,  Exists, Exists]),
        ("Invite",                      [Unauth, NotFound, Denied, Ok]),
        ("GetRoom",                     [NotFound, NotFound, Ok,  Ok]),
        ("ListMyRooms",                 [Unauth, Ok,      Ok,     Ok]),
        ("CheckMembership",             [Unauth, Ok,      Ok,     Ok]),
        ("OpenDirect with the creator", [Unauth, Ok,      Ok,     Invalid]),
        ("LeaveRoom",                   [Unauth, NotFound, Ok,    Ok]),
        ("RemoveMember",                [Unauth, NotFound, Denied, Ok]),
        ("ListOnline",                  [Unauth, NotFound, Ok,    Ok]),
        ("MarkRead",                    [Unauth, NotFound, Ok,    Ok]),
        ("ListUnread",                  [Unauth, Ok,      Ok,     Ok]),
        ("Send",                        [Unauth, Denied,  Ok,     Ok]),
        ("History",                     [Unauth, NotFound, Ok,    Ok]),
        ("Subscribe",                   [Unauth, NotFound, Ok,    Ok]),
        ("Edit",                        [Unauth, NotFound, Denied, Ok]),
        ("Delete",                      [Unauth, NotFound, Denied, Ok]),
        ("React",                       [Unauth, NotFound, Ok,    Ok]),
        ("Typing",                      [Unauth, NotFound, Ok,    Ok]),
        ("Search",                      [Unauth, NotFound, Ok,    Ok]),
    ];
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let cast = Cast::new(&app).await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for (method, expected) in rows {
        for (role, expected) in ROLES.into_iter().zip(expected) {
            n += 1;
            let scene = Scene::new(&app, &mut grpc, &cast, false, n).await;
            let got = grpc_call(&mut grpc, method, &scene, &cast, cast.token(role)).await;
            if got != *expected {
                wrong.push(format!("{method} as {role:?}: {got:?}, expected {expected:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
