// sonde-udp.so: the udp checker as a plugin.
#include <sonde/plugin_export.hpp>
#include <sonde/udp.hpp>

SONDE_PLUGIN_EXPORT("udp", "UDP datagram checks: ICMP port unreachable, reply matching",
                    sonde::plugin_type<sonde::udp_probe>())
