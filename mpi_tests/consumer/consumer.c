/* A user's program built against an installed hfdcp (see install_check.sh):
 * prints the status name of HFDCP_ERR_FORMAT and the bits of BF16. */
#include <stdio.h>

#include <hfdcp.h>

int main(void)
{
    printf("%s %d\n", hfdcp_status_name(HFDCP_ERR_FORMAT),
           hfdcp_dtype_bits(HFDCP_BF16));
    return 0;
}
