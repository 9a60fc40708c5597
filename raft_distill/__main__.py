from raft_distill.cli import main

main()
