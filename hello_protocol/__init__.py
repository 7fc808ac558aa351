"""The hello.ChatRoom wire protocol, shared by hello_server and hello_client.

``hello_pb2`` and ``hello_pb2_grpc`` are generated from ``protos/hello.proto``
by ``nox -s protos``; never edit them by hand. ``wire`` holds the hand-written
facts both ends of a connection must agree on, ``validation`` the input checks
both apply (a client refuses early, in the server's words).
"""
