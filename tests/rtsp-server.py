#!/usr/bin/python3
"""A live RTSP test camera on 127.0.0.1: videotestsrc's ball, JPEG over RTP.
   rtsp-server.py PORT      serves rtsp://127.0.0.1:PORT/ball until killed
(PORT 0: any free port).  Prints the bound port on its first line once it
listens, so a test can start it, stop it and start it again on that port."""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=160,height=120,framerate=10/1"
                   " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/ball", factory)
if server.attach(None) == 0:
    sys.exit("rtsp-server.py: cannot listen on 127.0.0.1:%s" % sys.argv[1])
print(server.get_bound_port(), flush=True)
GLib.MainLoop().run()
