/*
 * A plug-in for OpenIPMI's ipmi_sim (loadlib) answering DCMI Get Power Reading (NetFn 0x2C,
 * group extension 0xDC, command 0x02), which the simulator lacks. Test code, not shipped.
 *
 * The option string names a file holding the current power in watts, read at every request
 * (missing or unreadable: 0 W and the reading reported "deactivated"), so a test can change the
 * host's power while the simulated BMC runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <OpenIPMI/mcserv.h>
#include <OpenIPMI/serv.h>

/* Exported by ipmi_sim but absent from its headers: a handler for one NetFn 0x2C group. */
void ipmi_emu_register_group_extension_handler(unsigned char group, cmd_handler_f handler,
                                               void *cb_data);

#define DCMI_GROUP 0xdc
#define DCMI_GET_POWER_READING 0x02

static char power_file[4096];

static int read_power(unsigned *watts) {
    FILE *file = fopen(power_file, "r");
    int ok;
    if (file == NULL) return 0;
    ok = fscanf(file, "%u", watts) == 1;
    fclose(file);
    return ok;
}

static void put16(unsigned char *at, unsigned value) {
    at[0] = value & 0xff;
    at[1] = (value >> 8) & 0xff;
}

static void dcmi(lmc_data_t *mc, msg_t *msg, unsigned char *rdata, unsigned int *rdata_len,
                 void *cb_data) {
    unsigned watts = 0;
    int active;
    (void)mc;
    (void)cb_data;
    rdata[1] = DCMI_GROUP;
    if (msg->cmd != DCMI_GET_POWER_READING) {
        rdata[0] = 0xc1; /* invalid command */
        *rdata_len = 2;
        return;
    }
    active = read_power(&watts);
    memset(rdata + 2, 0, 17);
    rdata[0] = 0;
    put16(rdata + 2, watts); /* current */
    put16(rdata + 4, watts); /* minimum over the period */
    put16(rdata + 6, watts); /* maximum */
    put16(rdata + 8, watts); /* average */
    rdata[18] = active ? 0x40 : 0x00;
    *rdata_len = 19;
}

int ipmi_sim_module_print_version(sys_data_t *sys, char *options) {
    (void)sys;
    (void)options;
    printf("footprint DCMI power plug-in 1\n");
    return 0;
}

int ipmi_sim_module_init(sys_data_t *sys, const char *options) {
    (void)sys;
    snprintf(power_file, sizeof power_file, "%s", options ? options : "");
    ipmi_emu_register_group_extension_handler(DCMI_GROUP, dcmi, NULL);
    return 0;
}
