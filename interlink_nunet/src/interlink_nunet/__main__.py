from interlink_nunet.server import main

raise SystemExit(main())
