"""Chips as the kernel and the bus show them, for running the Pi drivers off a Pi.

The real drivers in ``hal/pi`` talk to these exactly as they would to the hardware:
an RC522 at register level behind an SPI port, a Modbus energy meter served by pymodbus
over TCP or a pseudo-terminal RTU line, the kernel's PWM sysfs tree as a directory of
files (sysfs_pwm), an MCP3008 whose CP input is a square wave in time (mcp3008), a
residual-current monitor module's fault output and test input on mock pins (rcd).  The
tests and ``./dev pibox`` use them; nothing here is imported by the daemon on a real
charger.
"""
