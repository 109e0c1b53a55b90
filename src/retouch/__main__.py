from retouch.cli import main

raise SystemExit(main())
