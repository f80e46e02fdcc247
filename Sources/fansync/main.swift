import FanSync
