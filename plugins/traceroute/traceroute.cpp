// sonde-traceroute.so: the traceroute checker as a plugin.
#include <sonde/plugin_export.hpp>
#include <sonde/traceroute.hpp>

SONDE_PLUGIN_EXPORT("traceroute",
                    "Traceroute checks: the path to a host, per-hop address, RTTs and loss",
                    sonde::plugin_type<sonde::traceroute_probe>())
