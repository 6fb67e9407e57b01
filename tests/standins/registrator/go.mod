module registrator-standin

go 1.19
