"""The Xen adapter: the only code in PEX that knows Xen.

`dispatcher.XenDispatcher` creates and drives VMs through XAPI (the `XenAPI` client);
`watcher.XenEventWatcher` reports what happens to them; `errors` holds what both raise;
`simulator` is a XAPI pool to run them against without Xen. Import the modules you need:
this package imports nothing itself.
"""
