"""hello_client: the hello-chat library and command."""
