#pragma once
/// @file commands.hpp
/// The alarm commands of the control protocol (docs/control-protocol.md): `alarms`, `silence`,
/// `unsilence`, `ack`, `notifiers`; alarm events for watchers that ask for them; an "alarms"
/// section in `status`. Written once in the command registry, so every transport serves them.

#include "alarms/alarm_manager.hpp"
#include "control/control.hpp"

namespace sonde::engine::alarms {

/// Register the commands on `server` and stream `alarms`' events to its watchers. Both must
/// outlive each other's use (the engine keeps them for its whole run).
void add_alarm_commands(control_server& server, alarm_manager& alarms);

}  // namespace sonde::engine::alarms
