"""``python -m hello_client``: the hello-chat command."""

from hello_client.cli import main

main()
