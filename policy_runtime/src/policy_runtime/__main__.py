from policy_runtime.cli import main

raise SystemExit(main())
