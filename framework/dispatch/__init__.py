"""Job dispatch: the host broker, the in-sandbox ``remote-run`` client, and the executors.

Stable interface (used by ``launch`` and the sandbox)::

    from framework.dispatch.broker import start_broker
    handle = start_broker(workspace_root, settings, session_id)   # background threads on the host
    handle.socket_path    # the Unix socket, in the host's own 0700 channel directory: bind the
                          # socket alone read-only into a directory the agent cannot write, and set
                          # REMOTE_RUN_SOCKET inside to where it is (never mount the directory)
    handle.client_path    # the stdlib-only ``remote-run`` script: bind it read-only onto the PATH
    handle.env            # {"REMOTE_RUN_SOCKET": str(socket_path)}: for clients on the host
    handle.stop()

    agentic-researcher broker [--workspace W]     # the same broker, standalone, in the foreground
    agentic-researcher jobs submit|status|logs|tail|cancel|nodes|list   # the remote-run verbs on the host

Modules: ``models`` (validated requests and run records), ``broker`` (socket server, records,
ledger events, recovery), ``local`` (GPU-aware scheduler for one workstation), ``slurm`` (submitit
submission, sacct/scontrol), ``runner`` (runs one rank on the node), ``snapshot`` (the workspace as
submitted: commit, diff, read-only copy), ``jobsandbox`` (each job in bwrap on its node, from that
snapshot; ``cluster.job_sandbox``), ``client`` (``remote-run``). See docs/dispatch.md.
"""
