"""A site meter on Modbus TCP for the collector's tests, served by pymodbus (3.16).

Holding registers 0..39 (anything else answers "illegal data address"); every value is
recomputed from the wall clock at each request, so counters really grow:

  0-1    water total volume, UINT32 litres, big-endian word order
  2-3    water flow, FLOAT32 L/min, big-endian word order
  4      water temperature, INT16, 0.1 degC
  10-11  facility energy, UINT32 kWh, little-endian word order (low word first)
  20     a UINT16 counter that wraps at 65536 (pulses)

Usage: modbus_meter.py --port P [--litres L] [--litres-per-second R] [--kwh K]
       [--kwh-per-second R] [--pulses N] [--pulses-per-second R] [--device-id N]
"""

import argparse
import asyncio
import struct
import time

from pymodbus.server import StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

REGISTERS = 40


def registers_at(args, elapsed):
    values = [0] * REGISTERS
    litres = int(args.litres + args.litres_per_second * elapsed) & 0xFFFFFFFF
    values[0], values[1] = litres >> 16, litres & 0xFFFF
    flow_high, flow_low = struct.unpack(">HH", struct.pack(">f", args.litres_per_second * 60.0))
    values[2], values[3] = flow_high, flow_low
    values[4] = struct.unpack(">H", struct.pack(">h", 215))[0]
    kwh = int(args.kwh + args.kwh_per_second * elapsed) & 0xFFFFFFFF
    values[10], values[11] = kwh & 0xFFFF, kwh >> 16
    values[20] = int(args.pulses + args.pulses_per_second * elapsed) % 65536
    return values


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--litres", type=float, default=123456)
    parser.add_argument("--litres-per-second", type=float, default=0)
    parser.add_argument("--kwh", type=float, default=987654)
    parser.add_argument("--kwh-per-second", type=float, default=0)
    parser.add_argument("--pulses", type=float, default=0)
    parser.add_argument("--pulses-per-second", type=float, default=0)
    args = parser.parse_args()
    started = time.monotonic()

    async def refresh(function_code, start_address, address, count, current_registers, set_values):
        values = registers_at(args, time.monotonic() - started)
        for offset in range(len(current_registers)):
            register = start_address + offset
            if 0 <= register < REGISTERS:
                current_registers[offset] = values[register]
        return None

    device = SimDevice(
        id=args.device_id,
        simdata=[SimData(address=0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)],
        action=refresh,
    )
    asyncio.run(StartAsyncTcpServer(context=device, address=("127.0.0.1", args.port)))


if __name__ == "__main__":
    main()
