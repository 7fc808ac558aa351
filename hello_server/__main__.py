from hello_server.cli import main

main()
