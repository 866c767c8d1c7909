// sonde-tcp.so: the tcp checker as a plugin.
#include <sonde/plugin_export.hpp>
#include <sonde/tcp.hpp>

SONDE_PLUGIN_EXPORT("tcp", "TCP connect, send/expect and TLS checks",
                    sonde::plugin_type<sonde::tcp_probe>())
